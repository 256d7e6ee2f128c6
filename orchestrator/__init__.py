"""The controller. Shared modules (contract, rundir, metrics, report, runs_table) import no Caffe;
config/ is the experiment schema; cli/ the command line; run/ the parent of a run; train/ the Caffe
child; predict/ uses a run's snapshots; sweep/ runs trials on Ray."""
