"""Scaling from zero by KEDA's own rules, on one machine: the decision (a pure function shared by
the live autoscaler of `fleet up`, the tests and the simulator), the metric reads KEDA's
redis-streams scaler makes, the scale-event log, `fleet status` and `fleet scale simulate`.
See docs/scaling.md."""
