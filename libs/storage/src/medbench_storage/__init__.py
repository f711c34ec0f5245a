"""MongoDB access over PyMongo's AsyncMongoClient: connection, indexes, transactions, outbox."""
