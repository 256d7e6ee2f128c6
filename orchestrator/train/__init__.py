"""Child side of a run: the process that owns Caffe (worker), the tiny loop, its hooks and the
pure decisions they call (stats, rules, decisions, surgery)."""
