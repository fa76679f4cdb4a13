"""SMPP 3.4: the PDU codec, the ESME session, delivery receipts and the adapter."""
