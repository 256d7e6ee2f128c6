"""Parent side of a run: check inputs, open the run dir, make the nets, pre-flight, supervise the
Caffe child, resume. Never imports orchestrator.train (the child)."""
