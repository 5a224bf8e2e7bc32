"""What careflow keeps: the relational model, engines, sessions, leases, job records, migrations."""
