"""Kafka carrying protobuf: typed topics, a batching publisher, an at-least-once consumer."""
