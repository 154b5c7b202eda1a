// Command capstan-controlplane runs one real Kubernetes control plane for Capstan's tests:
// an embedded etcd server and kube-apiserver, in one process, and optionally (with
// --controllers-kubeconfig) kube-controller-manager's garbage collector and namespace
// controller (controllers.go).
//
// Usage:
//
//	capstan-controlplane [wrapper flags] -- [kube-apiserver flags]
//
// The wrapper starts etcd (go.etcd.io/etcd/server/v3/embed) on a loopback port chosen by the
// kernel, waits until it serves, then runs kube-apiserver's own cobra command with the given
// flags plus --etcd-servers pointing at that etcd. On SIGTERM/SIGINT kube-apiserver shuts
// down gracefully, then etcd is closed. With --exit-on-stdin-close the process also shuts
// down when its standard input reaches end of file, so a test process that dies without
// cleaning up (a panic that aborts, SIGKILL) cannot leave a control plane running: the
// launcher holds the write end of a pipe and the kernel closes it when the launcher exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	_ "time/tzdata" // CronJob time zones, as upstream's kube-apiserver main imports.

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("capstan-controlplane", flag.ContinueOnError)
	etcdDir := fs.String("etcd-data-dir", "", "etcd data directory (required; created if missing)")
	etcdLog := fs.String("etcd-log-level", "error", "etcd log level: debug, info, warn, error")
	etcdTimeout := fs.Duration("etcd-start-timeout", 60*time.Second, "how long etcd may take to serve")
	stdinClose := fs.Bool("exit-on-stdin-close", false, "shut down when standard input reaches end of file")
	cleanupDir := fs.String("remove-on-exit", "", "directory to remove after shutdown (the launcher's temporary folder)")
	etcdURLFile := fs.String("etcd-url-file", "", "write the etcd client URL to this file once etcd serves")
	controllersKubeconfig := fs.String("controllers-kubeconfig", "",
		"run kube-controller-manager's garbage collector and namespace controller with this kubeconfig")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	apiserverArgs := fs.Args() // everything after "--"
	if *etcdDir == "" {
		fmt.Fprintln(os.Stderr, "capstan-controlplane: --etcd-data-dir is required")
		return 2
	}
	if *cleanupDir != "" {
		onExit = append(onExit, func() { removeDir(*cleanupDir) })
		defer removeDir(*cleanupDir)
	}

	etcd, clientURL, err := startEtcd(*etcdDir, *etcdLog, *etcdTimeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "capstan-controlplane: etcd: %v\n", err)
		return 1
	}
	defer etcd.Close()
	if *etcdURLFile != "" {
		if err := os.WriteFile(*etcdURLFile, []byte(clientURL+"\n"), 0o600); err != nil {
			fmt.Fprintf(os.Stderr, "capstan-controlplane: writing %s: %v\n", *etcdURLFile, err)
			return 1
		}
	}

	go func() {
		// etcd failing under a running apiserver leaves nothing worth testing against.
		if err, ok := <-etcd.Err(); ok && err != nil {
			fmt.Fprintf(os.Stderr, "capstan-controlplane: etcd stopped: %v\n", err)
			shutdown()
		}
	}()
	if *stdinClose {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			fmt.Fprintln(os.Stderr, "capstan-controlplane: standard input closed, shutting down")
			shutdown()
		}()
	}

	if *controllersKubeconfig != "" {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Their watches must not hold up kube-apiserver's graceful shutdown.
		onShutdown = append(onShutdown, cancel)
		go func() {
			if err := runControllers(ctx, *controllersKubeconfig); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "capstan-controlplane: controllers: %v\n", err)
				shutdown()
			}
		}()
	}

	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(append([]string{"--etcd-servers=" + clientURL}, apiserverArgs...))
	return cli.Run(cmd)
}

// startEtcd starts a single-member etcd on 127.0.0.1 with a kernel-chosen client port and
// returns it with its client URL once it is ready to serve.
func startEtcd(dir, logLevel string, timeout time.Duration) (*embed.Etcd, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	// The client port is probed here rather than left to etcd (port 0): etcd's own gateway
	// dials its configured address, which must be the real one. Peers: a single member never
	// dials them, and envtest passes --listen-peer-urls=http://localhost:0 for the same
	// reason (the default 2380 would collide between parallel test processes).
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{{Scheme: "http", Host: "127.0.0.1:0"}}
	cfg.UnsafeNoFsync = true // test data in a temporary folder; durability is not wanted
	cfg.LogLevel = logLevel
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(timeout):
		e.Server.Stop()
		e.Close()
		return nil, "", fmt.Errorf("not ready after %s", timeout)
	}
	if len(e.Clients) == 0 {
		e.Close()
		return nil, "", fmt.Errorf("no client listener")
	}
	return e, "http://" + e.Clients[0].Addr().String(), nil
}

// freePort returns a loopback TCP port that nothing listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// onShutdown runs when a shutdown is requested; onExit also when it has to be cut short.
var onShutdown, onExit []func()

// stopGrace bounds a graceful shutdown; a test control plane holds nothing worth waiting for.
const stopGrace = 5 * time.Second

// shutdown stops the in-process controllers, then asks kube-apiserver to stop the way an
// operator would: SIGTERM, which its own signal handler turns into a graceful shutdown. If
// that takes longer than stopGrace, the process cleans up and exits anyway.
func shutdown() {
	for _, f := range onShutdown {
		f()
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	go func() {
		time.Sleep(stopGrace)
		fmt.Fprintf(os.Stderr, "capstan-controlplane: graceful shutdown took over %s, exiting\n", stopGrace)
		for _, f := range onExit {
			f()
		}
		os.Exit(0)
	}()
}

func removeDir(dir string) {
	if dir == "" || dir == "/" || !filepath.IsAbs(dir) {
		return
	}
	_ = os.RemoveAll(dir)
}
