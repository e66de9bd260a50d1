-- `chatledger verify --checkpoints` checks, tenant by tenant, that every access record is a leaf
-- of the log (or still queued). Without an index on the record a leaf names, each tenant's check
-- read the whole leaf table. Partial: append leaves name no record.
CREATE INDEX tlog_leaves_by_access_record ON tlog_leaves (tenant_id, access_id)
    WHERE access_id IS NOT NULL;
