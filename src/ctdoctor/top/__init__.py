"""``ctdoctor top``: the query (keys, filters) and the rows it shows."""
