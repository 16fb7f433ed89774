// Command ovs-egress-apiserver runs a real Kubernetes API server for the tests and the demo of
// ovs-egress: etcd (embedded, its data in --dir) and kube-apiserver (the upstream code, in the same
// process), both on loopback only. It exists so that the cluster-in-a-box talks to the same server
// users run, with RBAC, admission webhooks over TLS, CRD validation, watch bookmarks and 410s.
//
// At the first start it generates a CA, the API server's serving certificate, an admin client
// certificate and the service-account signing key into --dir/pki; a restart with the same --dir
// reuses them and etcd's data, so clients and tokens stay valid. It writes --dir/admin.kubeconfig
// and, once /readyz answers ok, --dir/ready (JSON: url, kubeconfig, pid) and prints
// "ovs-egress-apiserver ready URL" on stdout. SIGTERM or SIGINT stops both servers. SIGUSR1
// compacts etcd at its current revision (tests use it to make watches and lists answer 410 Gone).
//
// It must never listen on anything but loopback, nor write outside --dir.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// listFlag collects a repeated string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "ovs-egress-apiserver: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "state directory: pki/, etcd/, admin.kubeconfig, ready (required)")
	port := flag.Int("secure-port", 0, "HTTPS port on 127.0.0.1 (0: the port of the previous run in --dir, else a free one)")
	readyTimeout := flag.Duration("ready-timeout", 30*time.Second, "how long to wait for /readyz")
	verbosity := flag.Int("log-verbosity", 0, "kube-apiserver log verbosity (its --v)")
	var sans, extraArgs listFlag
	flag.Var(&sans, "san", "extra IP or DNS name for the serving certificate (repeatable)")
	flag.Var(&extraArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --watch-cache=false (repeatable)")
	flag.Parse()
	if *dir == "" {
		return errors.New("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(*dir, "ready"))

	pki, err := loadOrCreatePKI(filepath.Join(*dir, "pki"), sans)
	if err != nil {
		return fmt.Errorf("certificates in %s: %w", *dir, err)
	}
	ports, err := loadOrPickPorts(filepath.Join(*dir, "ports.json"), *port)
	if err != nil {
		return err
	}
	apiURL := fmt.Sprintf("https://127.0.0.1:%d", ports.APIServer)
	kubeconfig := filepath.Join(*dir, "admin.kubeconfig")
	if err := writeKubeconfig(kubeconfig, apiURL, pki); err != nil {
		return err
	}

	etcd, err := startEtcd(filepath.Join(*dir, "etcd"), ports)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports.EtcdClient)

	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none", // the kubernetes Service may not point at loopback
		"--secure-port=" + strconv.Itoa(ports.APIServer),
		"--cert-dir=" + filepath.Join(*dir, "pki"),
		"--tls-cert-file=" + pki.path("apiserver.crt"),
		"--tls-private-key-file=" + pki.path("apiserver.key"),
		"--client-ca-file=" + pki.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki.path("sa.pub"),
		"--service-account-signing-key-file=" + pki.path("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/12",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=ValidatingAdmissionWebhook",
		"--profiling=false",
		"--v=" + strconv.Itoa(*verbosity),
	}
	args = append(args, extraArgs...)
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(args)
	served := make(chan error, 1)
	go func() { served <- cmd.Execute() }()

	if err := waitReady(apiURL, pki, *readyTimeout, served); err != nil {
		return err
	}
	ready, _ := json.Marshal(map[string]any{"url": apiURL, "kubeconfig": kubeconfig, "pid": os.Getpid()})
	tmp := filepath.Join(*dir, "ready.tmp")
	if err := os.WriteFile(tmp, ready, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(*dir, "ready")); err != nil {
		return err
	}
	fmt.Printf("ovs-egress-apiserver ready %s\n", apiURL)

	compact := make(chan os.Signal, 1)
	signal.Notify(compact, syscall.SIGUSR1)
	for {
		select {
		case err := <-served:
			// kube-apiserver returns after SIGTERM/SIGINT (its own signal handler) or on failure.
			return err
		case <-compact:
			if err := compactEtcd(etcdURL); err != nil {
				fmt.Fprintf(os.Stderr, "ovs-egress-apiserver: compaction: %v\n", err)
			}
		}
	}
}

// ports are remembered in --dir so that a restart serves on the same address and etcd finds the
// member URLs its data was created with.
type ports struct {
	APIServer  int `json:"apiserver"`
	EtcdClient int `json:"etcdClient"`
	EtcdPeer   int `json:"etcdPeer"`
}

func loadOrPickPorts(file string, apiserver int) (ports, error) {
	var p ports
	if data, err := os.ReadFile(file); err == nil {
		if err := json.Unmarshal(data, &p); err != nil {
			return p, fmt.Errorf("%s: %w", file, err)
		}
	}
	if apiserver != 0 {
		p.APIServer = apiserver
	}
	// Every listener stays open until all three ports are picked: closed one by one, the kernel
	// may hand the same port out twice (the API server and etcd then collide). The window until
	// the servers bind them is short, and a collision with another process fails the start loudly.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, port := range []*int{&p.APIServer, &p.EtcdClient, &p.EtcdPeer} {
		if *port != 0 {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return p, fmt.Errorf("picking a free loopback port: %w", err)
		}
		held = append(held, l)
		*port = l.Addr().(*net.TCPAddr).Port
	}
	data, _ := json.Marshal(p)
	return p, os.WriteFile(file, data, 0o600)
}

func startEtcd(dataDir string, p ports) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "ovs-egress"
	cfg.Dir = dataDir
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", p.EtcdClient)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", p.EtcdPeer)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", cfg.Name, peer.String())
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true // test data: a machine crash loses nothing we keep
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(20 * time.Second):
		e.Close()
		return nil, errors.New("not ready within 20 s")
	}
}

func compactEtcd(endpoint string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compact_rev_key")
	if err != nil {
		return err
	}
	rev := resp.Header.Revision
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "ovs-egress-apiserver: compacted etcd at revision %d\n", rev)
	return nil
}

func waitReady(apiURL string, pki *pki, timeout time.Duration, served <-chan error) error {
	cert, err := tls.LoadX509KeyPair(pki.path("admin.crt"), pki.path("admin.key"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}},
	}
	deadline := time.Now().Add(timeout)
	last := "no answer yet"
	for time.Now().Before(deadline) {
		select {
		case err := <-served:
			return fmt.Errorf("kube-apiserver exited before it was ready: %v", err)
		default:
		}
		resp, err := client.Get(apiURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver at %s not ready within %s (last /readyz: %s)", apiURL, timeout, last)
}
