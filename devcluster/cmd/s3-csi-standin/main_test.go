package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const privateNamespaceEnv = "S3_CSI_STANDIN_TEST_PRIVATE_MOUNTS"

// TestMain runs the tests, as root, in a private mount namespace of their own, so that their
// bind mounts never show on the host even if a test dies half-way.
func TestMain(m *testing.M) {
	if os.Geteuid() == 0 && os.Getenv(privateNamespaceEnv) == "" {
		if unshare, err := exec.LookPath("unshare"); err == nil {
			cmd := exec.Command(unshare, append([]string{"--mount", "--propagation", "private", "--",
				os.Args[0]}, os.Args[1:]...)...)
			cmd.Env = append(os.Environ(), privateNamespaceEnv+"=1")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				var exit *exec.ExitError
				if errors.As(err, &exit) {
					os.Exit(exit.ExitCode())
				}
				panic(err)
			}
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}

func TestParseMountOptions(t *testing.T) {
	opts, err := parseMountOptions([]string{"region eu-west-1", "prefix team/raw/", "uid=1000",
		"--gid=100", "allow-other", "read-only"})
	if err != nil {
		t.Fatal(err)
	}
	want := mountOptions{prefix: "team/raw/", uid: 1000, gid: 100, readOnly: true}
	if opts != want {
		t.Fatalf("got %+v, want %+v", opts, want)
	}
	opts, err = parseMountOptions([]string{"allow-delete", "allow-overwrite", "prefix k=v/"})
	if err != nil || opts != (mountOptions{prefix: "k=v/", uid: -1, gid: -1}) {
		t.Fatalf("got %+v, %v", opts, err)
	}
	opts, err = parseMountOptions([]string{"prefix=a b/"})
	if err != nil || opts != (mountOptions{prefix: "a b/", uid: -1, gid: -1}) {
		t.Fatalf("got %+v, %v", opts, err)
	}
	for _, bad := range []string{"uid=x", "gid=-1", "uid 99999999999"} {
		if _, err := parseMountOptions([]string{bad}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestSourceDir(t *testing.T) {
	for _, c := range []struct{ bucket, prefix, want string }{
		{"my-bucket", "", "/data/my-bucket"},
		{"my.bucket", "team/raw/", "/data/my.bucket/team/raw"},
		{"abc", "/x//y", "/data/abc/x/y"},
	} {
		got, err := sourceDir("/data", c.bucket, c.prefix)
		if err != nil || got != c.want {
			t.Errorf("sourceDir(%q, %q) = %q, %v; want %q", c.bucket, c.prefix, got, err, c.want)
		}
	}
	for _, c := range []struct{ bucket, prefix string }{
		{"", ""}, {"..", ""}, {"a..b", ""}, {"Upper", ""}, {"a/b", ""}, {"ok-bucket", "../x/"},
		{"ok-bucket", "a/./b"},
	} {
		if got, err := sourceDir("/data", c.bucket, c.prefix); err == nil {
			t.Errorf("sourceDir(%q, %q) = %q, want an error", c.bucket, c.prefix, got)
		}
	}
}

func TestUnescapeMountPath(t *testing.T) {
	if got := unescapeMountPath(`/a\040b\134c\01`); got != `/a b\c\01` {
		t.Fatalf("got %q", got)
	}
}

// plugin starts the stand-in on a fake kubelet root and returns its config.
func plugin(t *testing.T) config {
	t.Helper()
	root := t.TempDir()
	cfg := config{kubeletRoot: filepath.Join(root, "kubelet"), dataRoot: filepath.Join(root, "buckets"),
		nodeID: "devnode"}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- run(ctx, cfg, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		for _, socket := range []string{cfg.csiSocket(), cfg.registrationSocket()} {
			if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left behind (%v)", socket, err)
			}
		}
	})
	return cfg
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestRegistrationAndIdentity calls the services over their sockets as the kubelet does.
func TestRegistrationAndIdentity(t *testing.T) {
	cfg := plugin(t)
	ctx := timeout(t)
	if filepath.Dir(cfg.registrationSocket()) != filepath.Join(cfg.kubeletRoot, "plugins_registry") {
		t.Fatalf("registration socket %s is not in plugins_registry", cfg.registrationSocket())
	}
	reg := registration.NewRegistrationClient(dial(t, cfg.registrationSocket()))
	info, err := reg.GetInfo(ctx, &registration.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registration.CSIPlugin || info.Name != "s3.csi.aws.com" ||
		info.Endpoint != cfg.csiSocket() || !slices.Equal(info.SupportedVersions, []string{"1.0.0"}) {
		t.Fatalf("GetInfo: %+v", info)
	}
	if _, err := reg.NotifyRegistrationStatus(ctx, &registration.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}

	conn := dial(t, info.Endpoint)
	ident := csi.NewIdentityClient(conn)
	pluginInfo, err := ident.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || pluginInfo.Name != "s3.csi.aws.com" {
		t.Fatalf("GetPluginInfo: %v, %v", pluginInfo, err)
	}
	caps, err := ident.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil || len(caps.Capabilities) != 0 {
		t.Fatalf("GetPluginCapabilities: %v, %v (a node-only plugin has no controller service)", caps, err)
	}
	if _, err := ident.Probe(ctx, &csi.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	nodeClient := csi.NewNodeClient(conn)
	nodeInfo, err := nodeClient.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || nodeInfo.NodeId != "devnode" {
		t.Fatalf("NodeGetInfo: %v, %v", nodeInfo, err)
	}
	nodeCaps, err := nodeClient.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil || len(nodeCaps.Capabilities) != 0 {
		t.Fatalf("NodeGetCapabilities: %v, %v (no staging: the kubelet calls NodePublish only)", nodeCaps, err)
	}
}

func TestRejectedRegistrationStops(t *testing.T) {
	root := t.TempDir()
	cfg := config{kubeletRoot: root, dataRoot: root, nodeID: "devnode"}
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- run(context.Background(), cfg, func() { close(ready) }) }()
	<-ready
	reg := registration.NewRegistrationClient(dial(t, cfg.registrationSocket()))
	if _, err := reg.NotifyRegistrationStatus(timeout(t), &registration.RegistrationStatus{
		PluginRegistered: false, Error: "bad version"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || err.Error() != "the kubelet rejected the registration: bad version" {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
}

func publishRequest(target string, readOnly bool, mode csi.VolumeCapability_AccessMode_Mode,
	flags ...string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:      "studio-data-x",
		TargetPath:    target,
		Readonly:      readOnly,
		VolumeContext: map[string]string{"bucketName": "team-bucket"},
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		},
	}
}

// TestPublishUnpublish mounts and unmounts over the socket: writable, read-only in three ways,
// repeated calls, bad requests.
func TestPublishUnpublish(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	cfg := plugin(t)
	ctx := timeout(t)
	node := csi.NewNodeClient(dial(t, cfg.csiSocket()))
	pods := filepath.Join(cfg.kubeletRoot, "pods")
	rw := csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	ro := csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	target := func(name string) string {
		dir := filepath.Join(pods, name, "volumes", "kubernetes.io~csi", "pv", "mount")
		if err := os.MkdirAll(filepath.Dir(dir), 0o750); err != nil { // the kubelet makes the parent
			t.Fatal(err)
		}
		return dir
	}
	unpublish := func(dir string) {
		t.Helper()
		if _, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{
			VolumeId: "studio-data-x", TargetPath: dir}); err != nil {
			t.Fatal(err)
		}
		if mounted, _ := isMountPoint(dir); mounted {
			t.Fatalf("%s still mounted", dir)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("target %s not removed: %v", dir, err)
		}
	}

	// Writable: the directory is made at first use and owned as uid=/gid= say.
	writable := target("writer")
	flags := []string{"region eu-west-1", "prefix team/raw/", "uid=1000", "gid=100", "allow-other",
		"allow-delete", "allow-overwrite"}
	for range 2 { // the second call finds the volume mounted and succeeds
		if _, err := node.NodePublishVolume(ctx, publishRequest(writable, false, rw, flags...)); err != nil {
			t.Fatal(err)
		}
	}
	source := filepath.Join(cfg.dataRoot, "team-bucket", "team", "raw")
	info, err := os.Stat(source)
	if err != nil {
		t.Fatal(err)
	}
	if st := info.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 100 {
		t.Fatalf("%s owned by %d:%d, want 1000:100", source, st.Uid, st.Gid)
	}
	if err := os.WriteFile(filepath.Join(writable, "result.csv"), []byte("a,b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(source, "result.csv")); err != nil || string(data) != "a,b\n" {
		t.Fatalf("written file not in the bucket directory: %q, %v", data, err)
	}

	// Read-only: by mount option, by the request's readonly, by the access mode.
	for name, req := range map[string]*csi.NodePublishVolumeRequest{
		"option":      publishRequest(target("option"), false, rw, "prefix team/raw/", "read-only"),
		"readonly":    publishRequest(target("readonly"), true, rw, "prefix team/raw/"),
		"access-mode": publishRequest(target("access-mode"), false, ro, "prefix team/raw/"),
	} {
		if _, err := node.NodePublishVolume(ctx, req); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if data, err := os.ReadFile(filepath.Join(req.TargetPath, "result.csv")); err != nil || string(data) != "a,b\n" {
			t.Fatalf("%s: reading: %q, %v", name, data, err)
		}
		err := os.WriteFile(filepath.Join(req.TargetPath, "new.txt"), nil, 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Fatalf("%s: writing gave %v, want EROFS", name, err)
		}
		unpublish(req.TargetPath)
	}

	unpublish(writable)
	unpublish(writable) // repeated: nothing to do, still a success
	if _, err := os.Stat(filepath.Join(source, "result.csv")); err != nil {
		t.Fatalf("unpublishing touched the data: %v", err)
	}

	for name, req := range map[string]*csi.NodePublishVolumeRequest{
		"bucket":  {VolumeId: "v", TargetPath: target("bad"), VolumeContext: map[string]string{"bucketName": "../etc"}, VolumeCapability: publishRequest("", false, rw).VolumeCapability},
		"prefix":  publishRequest(target("bad"), false, rw, "prefix ../../"),
		"uid":     publishRequest(target("bad"), false, rw, "uid=me"),
		"block":   {VolumeId: "v", TargetPath: target("bad"), VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}},
		"no path": publishRequest("", false, rw),
	} {
		_, err := node.NodePublishVolume(ctx, req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
}
