"""Small pieces shared by data_prep, nets and orchestrator (no Caffe import at module load)."""
