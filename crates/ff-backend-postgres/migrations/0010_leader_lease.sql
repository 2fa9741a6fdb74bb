-- Leader leases: of the servers running reconcilers on one database, the one holding the
-- lease named `reconcilers` runs them, so maintenance load does not grow with the number of
-- servers. A holder renews its lease well within its time to live; a holder that dies (or loses
-- its database) stops renewing, and another takes the lease over once it has expired. The epoch
-- counts hand-overs.
CREATE TABLE ff_leader_lease (
    name text PRIMARY KEY,
    holder text NOT NULL,
    epoch bigint NOT NULL,
    acquired_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL
);

UPDATE ff_schema SET version = 10;
