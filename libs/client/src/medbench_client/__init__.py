"""Client of the MedBench gRPC API: partner calls, admin calls, task-bank files."""
