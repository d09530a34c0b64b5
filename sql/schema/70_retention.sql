-- Retention: finished jobs are deleted in batches by the pruner (the runtime
-- statement job_prune_batch, through jobs_finished_idx).

-- Deleting a job releases its dedup key row too.
create function pgjobs.jobs_after_delete() returns trigger
language plpgsql
security definer  -- the owner's rights: no runtime role writes dedup keys
set search_path = pg_catalog, pg_temp
as $$
begin
    delete from pgjobs.dedup_keys d
     using old_rows o
     where o.dedup_key is not null
       and d.organization = coalesce(o.organization, '')
       and d.job_type = o.job_type and d.dedup_key = o.dedup_key and d.job_id = o.id;
    return null;
end
$$;

create trigger jobs_after_delete
    after delete on pgjobs.jobs
    referencing old table as old_rows
    for each statement execute function pgjobs.jobs_after_delete();
