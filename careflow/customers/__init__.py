"""Customer records: imports of cards, vehicles and visits; segments, service due dates, cities, points."""
