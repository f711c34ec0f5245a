"""Process plumbing shared by every MedBench service."""
