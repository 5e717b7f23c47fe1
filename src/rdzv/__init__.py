"""rdzv: elastic rendezvous for distributed training jobs, without torch."""
