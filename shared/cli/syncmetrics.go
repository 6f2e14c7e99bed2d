package cli

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/redis-migrate/redis-migrate/shared/syncer"
)

// syncMetrics serves a sync's status as Prometheus metrics (read from Status at scrape time).
type syncMetrics struct {
	srv *http.Server
}

// syncCollector turns one Status into metrics at each scrape.
type syncCollector struct {
	sy                                                     *syncer.Syncer
	lag, pending, applied, deleted, failed, repaired       *prometheus.Desc
	gaps, gapsOpen, repairs, initialCopied, caughtUp, rate *prometheus.Desc
	last                                                   time.Time
	lastApplied                                            int64
	lastRate                                               float64
}

func newSyncCollector(sy *syncer.Syncer) *syncCollector {
	shard := []string{"shard"}
	return &syncCollector{
		sy:            sy,
		lag:           prometheus.NewDesc("redis_migrate_sync_lag_seconds", "Time since the newest barrier whose changes are all in the target (-1: none yet).", shard, nil),
		pending:       prometheus.NewDesc("redis_migrate_sync_pending_keys", "Changed keys waiting to be applied.", shard, nil),
		gaps:          prometheus.NewDesc("redis_migrate_sync_gaps_total", "Gaps seen (changes the feed may have missed).", shard, nil),
		gapsOpen:      prometheus.NewDesc("redis_migrate_sync_gap_open", "1 while a gap is not yet closed by a repair pass.", shard, nil),
		repairs:       prometheus.NewDesc("redis_migrate_sync_repairs_total", "Repair passes finished.", shard, nil),
		applied:       prometheus.NewDesc("redis_migrate_sync_applied_keys_total", "Keys re-copied or deleted in the target after a change.", nil, nil),
		deleted:       prometheus.NewDesc("redis_migrate_sync_deleted_keys_total", "Keys deleted in the target because the source no longer has them.", nil, nil),
		failed:        prometheus.NewDesc("redis_migrate_sync_failed_keys_total", "Keys the target refused.", nil, nil),
		repaired:      prometheus.NewDesc("redis_migrate_sync_repaired_keys_total", "Keys a repair pass found different.", nil, nil),
		initialCopied: prometheus.NewDesc("redis_migrate_sync_initial_copied_keys", "Keys copied by the initial copy.", nil, nil),
		caughtUp:      prometheus.NewDesc("redis_migrate_sync_caught_up", "1 when every shard is caught up with no open gap.", nil, nil),
		rate:          prometheus.NewDesc("redis_migrate_sync_applied_keys_per_second", "Applied keys per second since the previous scrape.", nil, nil),
	}
}

func (c *syncCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lag, c.pending, c.gaps, c.gapsOpen, c.repairs, c.applied, c.deleted, c.failed, c.repaired, c.initialCopied, c.caughtUp, c.rate} {
		ch <- d
	}
}

func (c *syncCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sy.Status()
	for _, sh := range st.Shards {
		lag := -1.0
		if sh.LagMs >= 0 {
			lag = float64(sh.LagMs) / 1000
		}
		open := 0.0
		if sh.GapOpen {
			open = 1
		}
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, lag, sh.Shard)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(sh.Pending), sh.Shard)
		ch <- prometheus.MustNewConstMetric(c.gaps, prometheus.CounterValue, float64(sh.Gaps), sh.Shard)
		ch <- prometheus.MustNewConstMetric(c.gapsOpen, prometheus.GaugeValue, open, sh.Shard)
		ch <- prometheus.MustNewConstMetric(c.repairs, prometheus.CounterValue, float64(sh.Repairs), sh.Shard)
	}
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.CounterValue, float64(st.Applied))
	ch <- prometheus.MustNewConstMetric(c.deleted, prometheus.CounterValue, float64(st.Deleted))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(st.Failed))
	ch <- prometheus.MustNewConstMetric(c.repaired, prometheus.CounterValue, float64(st.RepairFixed))
	ch <- prometheus.MustNewConstMetric(c.initialCopied, prometheus.GaugeValue, float64(st.Initial.KeysCopied))
	up := 0.0
	if _, ok := c.sy.CaughtUp(time.Time{}); ok {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(c.caughtUp, prometheus.GaugeValue, up)
	now := time.Now()
	if !c.last.IsZero() && now.Sub(c.last) > 100*time.Millisecond {
		c.lastRate = float64(st.Applied-c.lastApplied) / now.Sub(c.last).Seconds()
	}
	c.last, c.lastApplied = now, st.Applied
	ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, c.lastRate)
}

// serveMetrics serves sy's metrics on ln, which runSync opens before anything is captured or
// written, so a bad --metrics-addr is refused up front.
func serveMetrics(ln net.Listener, sy *syncer.Syncer) *syncMetrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newSyncCollector(sy))
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &syncMetrics{srv: srv}
}

func (m *syncMetrics) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
}
