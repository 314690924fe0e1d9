"""tradeloop: risk package."""
