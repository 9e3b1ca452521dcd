"""LMDB sample cache (`lmdb_store`): writer, lazy reader, value codec."""
