"""Personal data: erasure of one number or one campaign, and retention sweeps."""
