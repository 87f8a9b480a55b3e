package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// The dashboard in a real browser: headless Chromium driven by chromedp
// through the DevTools protocol. Nothing here sleeps: every wait is a
// WaitVisible or a Poll on the page, bounded by a timeout.

// envChromium names the browser binary; envArtifacts the directory for
// the screenshots (default: the test's temporary directory).
const (
	envChromium  = "HOURGLASS_CHROMIUM"
	envArtifacts = "HOURGLASS_ARTIFACTS"
)

// findChromium returns the browser to drive. Outside CI a machine without
// one skips the test, saying how to get it; under CI=true that fails, so CI
// can never pass without having run it.
func findChromium(t *testing.T) string {
	if p := os.Getenv(envChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found on PATH: install it (Debian and Ubuntu: apt-get install chromium) or set " + envChromium + " to its path"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; under CI=true this test must run")
	}
	t.Skip(msg)
	return ""
}

// browser starts headless Chromium with a fresh profile and returns a tab's
// context. The flags keep it off the network (this machine has none) and
// quick to start. The returned stop closes the browser and waits for it.
func browser(t *testing.T, parent context.Context) (context.Context, func()) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(findChromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1100),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	return ctx, func() {
		cancelTab()
		cancelAlloc()
	}
}

// exceptions collects the page's uncaught JavaScript exceptions until ctx
// ends; wait returns them once the collector has stopped.
func exceptions(ctx context.Context) (wait func() []string) {
	msgs := chromedp.Console(ctx)
	var (
		mu   sync.Mutex
		seen []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() {
				mu.Lock()
				seen = append(seen, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m.Text))
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

// textIs polls until the element's text is want.
func textIs(sel, want string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](
		fmt.Sprintf(`document.querySelector(%q) && document.querySelector(%q).textContent.trim() === %q`, sel, sel, want),
		chromedp.WithPollingTimeout(20*time.Second))
}

// visibleButtons counts the buttons inside sel that are rendered.
func visibleButtons(sel string) chromedp.Action[int] {
	return chromedp.Evaluate[int](fmt.Sprintf(
		`[...document.querySelectorAll(%q)].filter(b => b.offsetParent !== null).length`, sel+" button"))
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, png, 0o644))
	t.Logf("screenshot: %s", p)
}

// TestDashboardInBrowser: serve on loopback; N messages scheduled through
// the API; the overview shows N pending; a search by ID opens the
// message's page; cancelling there removes it (the page and the API say
// it is gone, the overview shows N-1); with a read token the page shows no
// action buttons; dead letters are listed, purged and replayed from their
// pages. Screenshots are saved along the way.
func TestDashboardInBrowser(t *testing.T) {
	findChromium(t) // skip (or fail under CI) before starting anything
	artifacts := os.Getenv(envArtifacts)
	if artifacts == "" {
		artifacts = t.TempDir()
	} else {
		require.NoError(t, os.MkdirAll(artifacts, 0o755))
	}

	cfg := memConfig()
	// localhost:1 is on the allow-list, but it resolves to loopback, which
	// the webhook dialer refuses before connecting: its messages become
	// dead letters at once, and nothing is sent anywhere.
	cfg.Webhook.Allow = []string{"hooks.example.test", "localhost:1"}
	cfg.Refresh = 200 * time.Millisecond
	s := startTest(t, cfg, tokenVars())
	st, out := s.call(t, adminToken, "POST", "api/v1/messages", `{"messages":[{"dest":"http://localhost:1/a"},{"dest":"http://localhost:1/b"}]}`)
	require.Equal(t, http.StatusCreated, st, "%v", out)
	deadIDs := out["ids"].([]any)

	const n = 5
	var batch []string
	for i := range n {
		batch = append(batch, fmt.Sprintf(`{"dest":"https://hooks.example.test/orders/%d","in":"%dm","key":"order-%d",
			"headers":[{"key":"X-Tenant","value":"acme"}],"payload":"%s"}`,
			i, 10*(i+1), i, b64(fmt.Sprintf(`{"order":%d,"item":"hourglass"}`, i))))
	}
	st, out = s.call(t, adminToken, "POST", "api/v1/messages", `{"messages":[`+strings.Join(batch, ",")+`]}`)
	require.Equal(t, http.StatusCreated, st, "%v", out)
	ids := out["ids"].([]any)
	target, other := ids[2].(string), ids[3].(string)
	require.Eventually(t, func() bool {
		_, page := s.call(t, readToken, "GET", "api/v1/dead", "")
		return len(page["messages"].([]any)) == 2
	}, 20*time.Second, 5*time.Millisecond, "the two loopback messages are dead letters")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bctx, stop := browser(t, ctx)
	defer stop()
	jsErrors := exceptions(bctx)

	// The overview, with the admin token handed over in the fragment.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(s.url+"#token="+adminToken),
		chromedp.WaitVisible(chromedp.ID("view-overview")),
		textIs("#pending-total", fmt.Sprint(n)),
		textIs("#by-dest tbody tr:first-child td:last-child", "1"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('#hist-hour .bar').length === 60 && document.querySelectorAll('#hist-day .bar').length === 24`,
			chromedp.WithPollingTimeout(20*time.Second)),
	))
	loc, err := chromedp.Run(bctx, chromedp.Location())
	require.NoError(t, err)
	require.NotContains(t, loc, adminToken, "the token left the address bar")
	screenshot(t, bctx, artifacts, "dashboard-overview.png")

	// Search by ID from the message browser and open the message's page.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.ID("nav-messages")),
		chromedp.WaitVisible(chromedp.ID("search-id")),
		chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelectorAll('#results tbody tr').length === %d`, n),
			chromedp.WithPollingTimeout(20*time.Second)),
	))
	screenshot(t, bctx, artifacts, "dashboard-messages.png")
	require.NoError(t, chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("search-id"), target),
		chromedp.Click(chromedp.ID("search-go")),
		chromedp.WaitVisible(chromedp.ID("msg-body")),
		textIs("#msg-id", target),
		textIs("#msg-state", "pending"),
		textIs("#msg-dest", "https://hooks.example.test/orders/2"),
		textIs("#msg-key", "order-2"),
		textIs("#msg-headers tbody tr td:last-child", "acme"),
		chromedp.Poll[chromedp.Void](`document.getElementById('payload').textContent.includes('"order": 2')`,
			chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.WaitVisible(chromedp.ID("btn-cancel")),
	))
	screenshot(t, bctx, artifacts, "dashboard-message.png")

	// Cancel it from its page: the page says so, the API agrees, the
	// overview counts one less.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.ID("btn-cancel")),
		chromedp.WaitVisible(chromedp.ID("btn-cancel-confirm")),
		chromedp.Click(chromedp.ID("btn-cancel-confirm")),
		chromedp.WaitVisible(chromedp.ID("msg-notfound")),
		chromedp.WaitVisible(chromedp.ID("msg-done")),
		chromedp.WaitNotVisible(chromedp.ID("msg-body")),
	))
	st, _ = s.call(t, adminToken, "GET", "api/v1/messages/"+target, "")
	require.Equal(t, http.StatusNotFound, st, "cancelled for real")
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.ID("nav-overview")),
		textIs("#pending-total", fmt.Sprint(n-1)),
	))

	// A read token in a new tab (session storage is per tab): the same page,
	// without its actions.
	rctx, rcancel := chromedp.NewContext(bctx)
	defer rcancel()
	require.NoError(t, chromedp.Do(rctx,
		chromedp.Navigate(s.url+"#token="+readToken),
		chromedp.WaitVisible(chromedp.ID("view-overview")),
		chromedp.WaitVisible(chromedp.ID("ro-badge")),
		chromedp.Navigate(s.url+"#/message/"+other),
		chromedp.WaitVisible(chromedp.ID("msg-body")),
		textIs("#msg-id", other),
		textIs("#msg-state", "pending"),
	))
	buttons, err := chromedp.Run(rctx, visibleButtons("#actions"))
	require.NoError(t, err)
	require.Zero(t, buttons, "read-only: no action buttons")
	screenshot(t, rctx, artifacts, "dashboard-read-only.png")
	require.NoError(t, chromedp.Do(rctx,
		chromedp.Navigate(s.url+"#/dead"),
		chromedp.WaitVisible(chromedp.ID("search-form")),
	))
	buttons, err = chromedp.Run(rctx, visibleButtons("#dead-actions"))
	require.NoError(t, err)
	require.Zero(t, buttons, "read-only: no purge button")
	// And the admin tab shows them on the same page.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(s.url+"#/message/"+other),
		textIs("#msg-id", other),
		chromedp.WaitVisible(chromedp.ID("btn-run-now")),
	))
	buttons, err = chromedp.Run(bctx, visibleButtons("#actions"))
	require.NoError(t, err)
	require.Equal(t, 3, buttons, "admin: cancel, run now and reschedule (the confirmation stays hidden)")

	// Dead letters: listed, one replayed and one purged from its page.
	replayed, purged := deadIDs[0].(string), deadIDs[1].(string)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.ID("nav-dead")),
		textIs("#messages-title", "Dead letters"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('#results tbody tr').length === 2`,
			chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.WaitVisible(chromedp.ID("purge-all")),
		chromedp.Click(chromedp.CSS(`#results a[href="#/message/`+purged+`"]`)),
		textIs("#msg-id", purged),
		textIs("#msg-state", "dead"),
		chromedp.Poll[chromedp.Void](`document.getElementById('msg-reason').textContent.includes('loopback address')`,
			chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.WaitVisible(chromedp.ID("btn-replay")),
	))
	screenshot(t, bctx, artifacts, "dashboard-dead-letter.png")
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.ID("btn-purge")),
		chromedp.WaitVisible(chromedp.ID("btn-purge-confirm")),
		chromedp.Click(chromedp.ID("btn-purge-confirm")),
		chromedp.WaitVisible(chromedp.ID("msg-notfound")),
		chromedp.Navigate(s.url+"#/message/"+replayed),
		textIs("#msg-state", "dead"),
		chromedp.WaitVisible(chromedp.ID("btn-replay")),
		chromedp.Click(chromedp.ID("btn-replay")),
		chromedp.Poll[chromedp.Void](`document.getElementById('msg-done').textContent.startsWith('Replayed')`,
			chromedp.WithPollingTimeout(20*time.Second)),
	))
	st, _ = s.call(t, adminToken, "GET", "api/v1/messages/"+purged, "")
	require.Equal(t, http.StatusNotFound, st, "purged for real")
	require.GreaterOrEqual(t, s.eng.Stats().Fired, uint64(3), "the replayed dead letter was tried again")

	rcancel()
	stop()
	require.Empty(t, jsErrors(), "uncaught JavaScript exceptions")
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
