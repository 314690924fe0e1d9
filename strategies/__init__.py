"""tradeloop: strategies package."""
