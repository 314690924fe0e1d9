"""tradeloop: data package."""
