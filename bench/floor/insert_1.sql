insert into jobs (payload) values ('{}');
