package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hourglassmq/hourglass/admin"
)

// Config is serve's configuration. Every field is a flag and a key of the
// optional TOML file (-config); a flag given on the command line wins over
// the file, and the file over the defaults. Secrets (API tokens, webhook
// signing keys) are never flags, since flags show in ps: they come from
// files or environment variables.
type Config struct {
	// Addr is the listen address. Default loopback only.
	Addr string `toml:"addr"`
	// Dir is the durable store's directory. Default <data dir>/store.
	Dir string `toml:"dir"`
	// Memory runs without a store: nothing survives a restart.
	Memory bool `toml:"mem"`
	// Shards, Tick and Window are engine.Options' fields (0: the engine's
	// defaults; a store keeps the shard count it was created with).
	Shards int           `toml:"shards"`
	Tick   time.Duration `toml:"tick"`
	Window time.Duration `toml:"window"`

	// Tokens is the API tokens file. Default <data dir>/tokens, created
	// with one admin and one read-only token if missing, unless the
	// HOURGLASS_ADMIN_TOKEN / HOURGLASS_READ_TOKEN variables hold them.
	Tokens string `toml:"tokens"`
	// TLSCert and TLSKey serve HTTPS (PEM files); both or neither.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// ReadOnly refuses every write, whatever the token.
	ReadOnly bool `toml:"read_only"`
	// MaxBody and MaxBatch bound requests (admin.Options).
	MaxBody  int64 `toml:"max_body"`
	MaxBatch int   `toml:"max_batch"`
	// Timeouts of http.Server, against slow or idle clients, and the drain
	// time allowed at shutdown.
	ReadHeaderTimeout time.Duration `toml:"read_header_timeout"`
	ReadTimeout       time.Duration `toml:"read_timeout"`
	WriteTimeout      time.Duration `toml:"write_timeout"`
	IdleTimeout       time.Duration `toml:"idle_timeout"`
	ShutdownTimeout   time.Duration `toml:"shutdown_timeout"`
	// Refresh is the dashboard's count refresh interval.
	Refresh time.Duration `toml:"refresh"`
	// LogFormat is "text" or "json"; LogLevel "debug", "info", "warn" or
	// "error". Logs go to standard error.
	LogFormat string `toml:"log_format"`
	LogLevel  string `toml:"log_level"`

	Webhook WebhookConfig `toml:"webhook"`
	NATS    NATSConfig    `toml:"nats"`
	Kafka   KafkaConfig   `toml:"kafka"`
}

// WebhookConfig enables http:// and https:// destinations when Allow is set.
type WebhookConfig struct {
	// Allow is webhook.Options.AllowedHosts.
	Allow []string `toml:"allow"`
	// AllowNets is webhook.Options.AllowedNets: special address ranges
	// (loopback, private, ...) that may be dialed.
	AllowNets []string `toml:"allow_nets"`
	// Secrets is a file of signing secrets, one a line; each signs every
	// request (one v1 signature per secret), so a rotation lists both.
	// HOURGLASS_WEBHOOK_SECRETS, comma separated, is the alternative.
	Secrets string `toml:"secrets"`
	// Timeout bounds one request. 0: webhook.DefaultTimeout.
	Timeout time.Duration `toml:"timeout"`
}

// NATSConfig enables nats:// and jetstream:// destinations when URL is set.
type NATSConfig struct {
	URL string `toml:"url"`
}

// KafkaConfig enables kafka:// destinations when Brokers is set.
type KafkaConfig struct {
	Brokers []string `toml:"brokers"`
	// Topics, when set, is the allow-list of topics.
	Topics []string `toml:"topics"`
}

// DefaultAddr is loopback: nothing outside this machine reaches the API
// until the operator says so.
const DefaultAddr = "127.0.0.1:7070"

func defaultConfig() Config {
	return Config{
		Addr:              DefaultAddr,
		MaxBody:           admin.DefaultMaxBody,
		MaxBatch:          admin.DefaultMaxBatch,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ShutdownTimeout:   30 * time.Second,
		Refresh:           admin.DefaultRefreshInterval,
		LogFormat:         "text",
		LogLevel:          "info",
	}
}

// dataDirHelp says where the default data directory is, for -h.
const dataDirHelp = `$XDG_DATA_HOME/hourglass if XDG_DATA_HOME is set, else ~/.local/share/hourglass
(on macOS ~/Library/Application Support/hourglass, on Windows %AppData%\hourglass)`

// dataDir is the default home of the store and the tokens file.
func dataDir(getenv func(string) string) (string, error) {
	if d := getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "hourglass"), nil
	}
	switch runtime.GOOS {
	case "darwin", "ios", "windows", "plan9":
		d, err := os.UserConfigDir()
		if err != nil {
			return "", fmt.Errorf("no default data directory (set -dir and -tokens): %w", err)
		}
		return filepath.Join(d, "hourglass"), nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("no default data directory: $HOME is not set (set -dir and -tokens)")
	}
	return filepath.Join(home, ".local", "share", "hourglass"), nil
}

// listFlag is a repeatable, comma-separated string list. The first Set
// replaces the value (so a flag replaces the file's list); later ones add.
type listFlag struct {
	list *[]string
	set  bool
}

func (l *listFlag) String() string {
	if l.list == nil {
		return ""
	}
	return strings.Join(*l.list, ",")
}

func (l *listFlag) Set(s string) error {
	if !l.set {
		*l.list, l.set = nil, true
	}
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l.list = append(*l.list, v)
		}
	}
	return nil
}

// serveFlags binds every Config field to a flag of a new set, plus -config
// into configFile.
func serveFlags(c *Config, configFile *string) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(configFile, "config", "", "read settings from this TOML `file` first; flags given here win over it")
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen `address`; the default is loopback only")
	fs.StringVar(&c.Dir, "dir", c.Dir, "durable store `directory` (default <data dir>/store)")
	fs.BoolVar(&c.Memory, "mem", c.Memory, "no store: keep messages in memory only; NOTHING SURVIVES A RESTART")
	fs.IntVar(&c.Shards, "shards", c.Shards, "number of shards; 0: GOMAXPROCS for a new store, the store's own count otherwise")
	fs.DurationVar(&c.Tick, "tick", c.Tick, "timing wheel resolution; 0: the engine's default (1ms)")
	fs.DurationVar(&c.Window, "window", c.Window, "how far ahead messages are held in RAM; 0: the engine's default (1m)")
	fs.StringVar(&c.Tokens, "tokens", c.Tokens, "API tokens `file`, lines of \"admin TOKEN\" or \"read TOKEN\" (default <data dir>/tokens,\ncreated if missing); or set HOURGLASS_ADMIN_TOKEN and HOURGLASS_READ_TOKEN instead")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "serve HTTPS with this PEM certificate `file` (with -tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "the PEM private key `file` for -tls-cert")
	fs.BoolVar(&c.ReadOnly, "read-only", c.ReadOnly, "refuse every write, whatever the token")
	fs.Int64Var(&c.MaxBody, "max-body", c.MaxBody, "largest request body in `bytes`")
	fs.IntVar(&c.MaxBatch, "max-batch", c.MaxBatch, "most messages in one schedule call, and IDs in one replay or purge")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", c.ReadHeaderTimeout, "time a client has to send its request headers")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", c.ReadTimeout, "time a client has to send a whole request")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "time to write a response, from the end of the request headers")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "how long an idle keep-alive connection stays open")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "on SIGTERM or SIGINT, how long requests and deliveries in flight may drain")
	fs.DurationVar(&c.Refresh, "refresh", c.Refresh, "how often the dashboard's counts are recomputed while it is open")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error")
	fs.Var(&listFlag{list: &c.Webhook.Allow}, "webhook-allow", "webhook `hosts` messages may be sent to (host, host:port, *.domain, IP); repeat or separate\nwith commas; enables http:// and https:// destinations")
	fs.Var(&listFlag{list: &c.Webhook.AllowNets}, "webhook-allow-net", "special address ranges webhooks may reach (`CIDR`: 10.0.0.0/8, 127.0.0.1/32); loopback, private,\nlink-local and metadata addresses are refused otherwise, also when a host name resolves to them")
	fs.StringVar(&c.Webhook.Secrets, "webhook-secrets", c.Webhook.Secrets, "webhook signing secrets `file`, one a line; or set HOURGLASS_WEBHOOK_SECRETS (comma-separated)")
	fs.DurationVar(&c.Webhook.Timeout, "webhook-timeout", c.Webhook.Timeout, "bound on one webhook request; 0: 10s")
	fs.StringVar(&c.NATS.URL, "nats", c.NATS.URL, "NATS server `URL`; enables nats:// and jetstream:// destinations (give credentials in the config file's [nats] url, not here: flags show in ps)")
	fs.Var(&listFlag{list: &c.Kafka.Brokers}, "kafka", "Kafka seed `brokers` (host:port, comma-separated); enables kafka:// destinations")
	fs.Var(&listFlag{list: &c.Kafka.Topics}, "kafka-topics", "allow-list of Kafka `topics` (default: any)")
	return fs
}

// loadConfigFile decodes a TOML file over c, refusing keys it does not know.
func loadConfigFile(path string, c *Config) error {
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("config %s: unknown keys %s (see hourglass serve -h for the settings)", path, strings.Join(keys, ", "))
	}
	return nil
}

// usageError is a command-line mistake: exit status 2.
type usageError struct{ error }

// parseServe reads flags and the config file into a Config: defaults, then
// the file, then the flags given on the command line.
func parseServe(args []string, stderr interface{ Write([]byte) (int, error) }) (Config, error) {
	cfg := defaultConfig()
	var file string
	fs := serveFlags(&cfg, &file)
	fs.SetOutput(stderr)
	fs.Usage = func() { serveUsage(fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return Config{}, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if file != "" {
		fcfg := defaultConfig()
		if err := loadConfigFile(file, &fcfg); err != nil {
			return Config{}, err
		}
		var ignored string
		over := serveFlags(&fcfg, &ignored)
		var err error
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "config" && err == nil {
				err = over.Set(f.Name, f.Value.String())
			}
		})
		if err != nil {
			return Config{}, err
		}
		cfg = fcfg
	}
	return cfg, cfg.validate()
}

func (c *Config) validate() error {
	switch {
	case c.Addr == "":
		return usageError{errors.New("-addr is empty")}
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return usageError{errors.New("-tls-cert and -tls-key go together")}
	case c.Memory && c.Dir != "":
		return usageError{errors.New("-mem and -dir exclude each other")}
	case !slices.Contains([]string{"text", "json"}, c.LogFormat):
		return usageError{fmt.Errorf("-log-format %q: want text or json", c.LogFormat)}
	case !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel):
		return usageError{fmt.Errorf("-log-level %q: want debug, info, warn or error", c.LogLevel)}
	case c.MaxBody <= 0 || c.MaxBatch <= 0:
		return usageError{errors.New("-max-body and -max-batch must be positive")}
	case c.ReadHeaderTimeout <= 0 || c.ReadTimeout <= 0 || c.WriteTimeout <= 0 || c.IdleTimeout <= 0 || c.ShutdownTimeout <= 0 || c.Refresh <= 0:
		return usageError{errors.New("timeouts and -refresh must be positive")}
	}
	return nil
}

func serveUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, `usage: hourglass serve [flags]

Runs an engine behind an HTTP JSON API (under /api/v1/) and a web dashboard (at /),
on loopback unless -addr says otherwise, and prints their URLs.

The store and the tokens file live in the data directory unless -dir and -tokens
name other places: %s.

API calls need "Authorization: Bearer TOKEN": an admin token may do everything,
a read token only read. The dashboard's files and /api/v1/health and
/api/v1/ready need no token. GET /metrics serves Prometheus metrics to a read
or admin token. Local queues (local://) are not available here:
they need handlers in the process that embeds the engine.

SIGTERM or SIGINT stops accepting connections, drains requests and deliveries in
flight (-shutdown-timeout) and closes the engine; a second signal stops at once.

Every flag is also a key of the -config file (TOML): the flag's name with
underscores for dashes at the top level (addr, dir, mem, tls_cert, ...), and
-webhook-allow, -webhook-allow-net, -webhook-secrets, -webhook-timeout, -nats,
-kafka and -kafka-topics as allow, allow_nets, secrets and timeout in [webhook],
url in [nats], and brokers and topics in [kafka]. Durations are strings ("30s").

flags:
`, dataDirHelp)
	fs.PrintDefaults()
}
