"""The database: what every database's access shares (engine: the Database's pools and
sessions; each database's own rules are its subclass in app/store/<database>/database.py),
the tables (models), read replicas, migrations, and the connection budget a deployment
needs."""
