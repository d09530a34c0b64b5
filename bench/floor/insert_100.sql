insert into jobs (payload) select '{}' from generate_series(1, 100);
