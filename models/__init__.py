"""tradeloop: models package."""
