"""tradeloop: brokers package."""
