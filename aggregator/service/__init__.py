"""The running service: one poll of every due feed (poll), placing new items in clusters
(clustering), the pipeline that ties fetch, dedup and store together (app), the schedule
and back-off, the store-outage breaker, and the daemon that runs it all."""
