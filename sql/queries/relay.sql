-- The state relay (pgjobs/worker/relay.py): the worker's sessions leave their
-- pgjobs_state events in pgjobs.state_outbox; a supervisor sends them.

-- name: state_relay
-- Sends (as NOTIFYs) and deletes up to %(n)s outbox rows past %(after)s, in id
-- order; the ids sent. Nothing while another session relays.
select id from pgjobs.state_relay(%(after)s, %(n)s) as r(id);
