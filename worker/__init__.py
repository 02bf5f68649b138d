"""story-worker: raw scraped news in, deduplicated, entity-tagged story events out."""

__version__ = "0.1.0"
