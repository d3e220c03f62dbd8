"""The database: the engine and its pools (engine), the tables (models), read replicas,
migrations, and the connection budget a deployment needs."""
