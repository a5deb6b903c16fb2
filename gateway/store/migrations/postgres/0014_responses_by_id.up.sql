-- Stored responses are removed past their retention by their id (responses_sql.RETENTION): an id is resp_ and a
-- UUIDv7 whose first 12 hex digits are its time, so the primary key's own index orders them by age. The ts index
-- was one more index to update for every response stored (about a sixth of the row's write).
DROP INDEX responses_ts;
