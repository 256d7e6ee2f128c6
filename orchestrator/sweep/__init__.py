"""`orchestrate sweep`: the driver, the sweep file and trial planning, the Ray Tune trainable."""
