-- Payloads are compressed with LZ4 instead of PostgreSQL's default pglz when the server was
-- built with it (PostgreSQL 14+ with --with-lz4, as the common distributions are): an
-- execution's input, its result, frames and signal payloads. pglz costs about a tenth of the
-- database's CPU on ingress of 4 KiB inputs; LZ4 compresses several times faster at a similar
-- ratio. Only values written from now on use it; older values stay readable as they are. On a
-- server without LZ4 the columns keep pglz.
DO $$
BEGIN
    ALTER TABLE ff_execution ALTER COLUMN input_payload SET COMPRESSION lz4,
                             ALTER COLUMN result SET COMPRESSION lz4;
    ALTER TABLE ff_frame ALTER COLUMN bytes SET COMPRESSION lz4;
    ALTER TABLE ff_signal ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no LZ4 support: payloads stay compressed with pglz';
END
$$;

UPDATE ff_schema SET version = 15;
