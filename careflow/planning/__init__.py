"""Planning a day: due occasions asked of the plugins in id windows and shards, the outbox written."""
