"""Onlooker's streaming pipeline: sources → hub → commentator → backend → event bus."""
