"""Thin adapters at the edge: Redis state, Kafka in/out, local services."""
