package virtualdom

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// RetryPolicy says when and how long to wait before retrying a failed idempotent call (a read,
// or a write with a request id) and before re-establishing a broken change stream.
//
// Attempt n (0-based) waits min(MaxBackoff, InitialBackoff * Multiplier^n), less a random
// fraction of up to Jitter; a RESOURCE_EXHAUSTED that carries a retry-after hint waits at
// least that long. Only the codes in RetryOn are retried: INVALID_ARGUMENT never is.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts of one unary call (1 = no retries).
	MaxAttempts    int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
	Jitter         float64
	RetryOn        []codes.Code
	// StreamMaxAttempts bounds consecutive failed reconnects of a subscription before it
	// returns the error (0 = never reconnect, negative = keep trying until its context ends).
	StreamMaxAttempts int
}

// DefaultRetryPolicy is the policy of a Client made without WithRetry (the Python client's).
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts:       5,
		InitialBackoff:    50 * time.Millisecond,
		MaxBackoff:        2 * time.Second,
		Multiplier:        2,
		Jitter:            0.5,
		RetryOn:           []codes.Code{codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted},
		StreamMaxAttempts: -1,
	}
}

// NoRetries fails unary calls at once and never reconnects streams.
func NoRetries() RetryPolicy {
	p := DefaultRetryPolicy()
	p.MaxAttempts = 1
	p.StreamMaxAttempts = 0
	return p
}

func (p RetryPolicy) retryable(err error) bool {
	code := CodeOf(err)
	found := false
	for _, c := range p.RetryOn {
		found = found || c == code
	}
	if !found {
		return false
	}
	// A message over a size limit is RESOURCE_EXHAUSTED too, but retrying cannot help it.
	var e *Error
	if code == codes.ResourceExhausted && asError(err, &e) && strings.Contains(e.Message, "larger than max") {
		return false
	}
	return true
}

func (p RetryPolicy) backoff(attempt int, err error) time.Duration {
	base := float64(p.InitialBackoff) * math.Pow(p.Multiplier, float64(min(attempt, 64)))
	d := time.Duration(min(float64(p.MaxBackoff), base) * (1 - p.Jitter*rand.Float64()))
	var e *Error
	if asError(err, &e) && e.Detail != nil && e.Detail.GetRetryAfterMs() > 0 {
		d = max(d, time.Duration(e.Detail.GetRetryAfterMs())*time.Millisecond)
	}
	return d
}

// sleep waits d or until ctx ends (then its error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
