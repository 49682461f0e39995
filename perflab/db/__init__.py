"""The database: engine (env URL or embedded server), migrations, and write strategies."""
