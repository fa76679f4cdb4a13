"""Operating loa: backups of its state, restores, and the schedule that makes them."""
