package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// PromQuery runs an instant PromQL query on the stack's Prometheus and
// returns its single value; an empty result or several series is an error
// (as KEDA's Prometheus scaler treats them).
func (s *Stack) PromQuery(ctx context.Context, q string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, PrometheusURL+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return 0, fmt.Errorf("build query: %w", err)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("query prometheus: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   struct {
			Result []struct{ Value [2]any }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("decode prometheus answer: %w", err)
	}
	if body.Status != "success" {
		return 0, fmt.Errorf("query %q: %s", q, body.Error)
	}
	if len(body.Data.Result) != 1 {
		return 0, fmt.Errorf("query %q: %d series", q, len(body.Data.Result))
	}
	str, _ := body.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return 0, fmt.Errorf("parse value %q: %w", str, err)
	}
	return v, nil
}
