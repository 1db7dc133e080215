// Command s3-csi-standin is a STAND-IN for the node plugin of the Mountpoint for Amazon S3 CSI
// driver, for the devcluster only. It never talks to S3 and needs no FUSE: it registers with the
// kubelet under the real driver's name (s3.csi.aws.com), so the PersistentVolumes Studio Spawner
// makes for Mountpoint mount unchanged, and it bind-mounts one local directory per bucket,
// <data-root>/<bucketName>/<prefix>, at the pod's target path.
//
// What it honours of Mountpoint's mount options: "prefix <p>/" (the directory under the bucket),
// "uid=<n>" and "gid=<n>" (the directory is chowned to them when this plugin creates it and
// whenever a writable volume is published; files keep their real owners, unlike Mountpoint's),
// and "read-only". The mount is read-only when the options say so, when the NodePublish request
// is read-only (PersistentVolume csi.readOnly or the pod's claim readOnly) or when the access
// mode only allows reading. Every other option (region, allow-other, allow-delete…) is ignored.
//
// It serves the CSI Identity and Node services (no staging, no controller) on a unix socket and
// the kubelet's plugin-registration service on <kubelet-root>/plugins_registry/, which the
// kubelet's plugin watcher picks up. Mounts are a bind mount plus a read-only remount, so it must
// run as root in the kubelet's mount namespace. Built static with CGO off.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

const (
	driverName    = "s3.csi.aws.com"
	driverVersion = "0.0.0-devcluster-standin"
)

// S3's rule for bucket names (general purpose buckets), which also keeps paths inside data-root.
var bucketPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// config is what the command line sets.
type config struct {
	kubeletRoot string // the kubelet's --root-dir
	dataRoot    string // one directory per bucket below it
	nodeID      string // the Kubernetes node name
	endpoint    string // the CSI socket; default <kubelet-root>/plugins/s3.csi.aws.com/csi.sock
}

func (c config) registrationSocket() string {
	return filepath.Join(c.kubeletRoot, "plugins_registry", driverName+"-reg.sock")
}

func (c config) csiSocket() string {
	if c.endpoint != "" {
		return c.endpoint
	}
	return filepath.Join(c.kubeletRoot, "plugins", driverName, "csi.sock")
}

func main() {
	var cfg config
	flag.StringVar(&cfg.kubeletRoot, "kubelet-root", "", "the kubelet's --root-dir (required)")
	flag.StringVar(&cfg.dataRoot, "data-root", "", "directory holding one directory per bucket (required)")
	flag.StringVar(&cfg.nodeID, "node-id", "", "this node's name (required)")
	flag.StringVar(&cfg.endpoint, "endpoint", "", "CSI socket path (default <kubelet-root>/plugins/"+driverName+"/csi.sock)")
	flag.Parse()
	if cfg.kubeletRoot == "" || cfg.dataRoot == "" || cfg.nodeID == "" {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil {
		log.Fatal(err)
	}
}

// run serves both sockets until ctx ends or the kubelet rejects the registration; ready (if
// not nil) is called once both listen. The sockets are removed on return.
func run(ctx context.Context, cfg config, ready func()) error {
	rejected := make(chan error, 1)
	csiServer := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	csi.RegisterIdentityServer(csiServer, identity{})
	csi.RegisterNodeServer(csiServer, &node{nodeID: cfg.nodeID, dataRoot: cfg.dataRoot})
	regServer := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	registration.RegisterRegistrationServer(regServer, &registrar{endpoint: cfg.csiSocket(), rejected: rejected})

	csiListener, err := listen(cfg.csiSocket())
	if err != nil {
		return err
	}
	defer os.Remove(cfg.csiSocket())
	go func() { _ = csiServer.Serve(csiListener) }()
	defer stopServer(csiServer)
	// The kubelet calls NodeGetInfo as soon as it sees this socket: the CSI socket serves first.
	regListener, err := listen(cfg.registrationSocket())
	if err != nil {
		return err
	}
	defer os.Remove(cfg.registrationSocket()) // the kubelet deregisters the driver when it goes
	go func() { _ = regServer.Serve(regListener) }()
	defer stopServer(regServer)
	log.Printf("%s stand-in: CSI on %s, registration on %s, data in %s",
		driverName, cfg.csiSocket(), cfg.registrationSocket(), cfg.dataRoot)
	if ready != nil {
		ready()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-rejected:
		return err
	}
}

// stopServer lets calls under way answer (the kubelet's NotifyRegistrationStatus too), for at
// most two seconds.
func stopServer(server *grpc.Server) {
	stopped := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		server.Stop()
	}
}

func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", path)
}

func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		log.Printf("%s: %v", info.FullMethod, err)
	} else if !strings.HasSuffix(info.FullMethod, "/Probe") {
		log.Printf("%s: ok", info.FullMethod)
	}
	return resp, err
}

// registrar answers the kubelet's plugin watcher.
type registrar struct {
	registration.UnimplementedRegistrationServer
	endpoint string
	rejected chan<- error
}

func (r *registrar) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{
		Type:              registration.CSIPlugin,
		Name:              driverName,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registration.RegistrationStatus) (*registration.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		log.Printf("registered with the kubelet")
	} else {
		select {
		case r.rejected <- fmt.Errorf("the kubelet rejected the registration: %s", s.Error):
		default:
		}
	}
	return &registration.RegistrationStatusResponse{}, nil
}

// identity is the CSI Identity service: no controller service, always ready.
type identity struct{}

func (identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: driverName, VendorVersion: driverVersion}, nil
}

func (identity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

func (identity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// node is the CSI Node service: publish and unpublish only (no staging, no stats).
type node struct {
	csi.UnimplementedNodeServer
	nodeID   string
	dataRoot string
	mu       sync.Mutex // one mount change at a time
}

func (n *node) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.nodeID}, nil
}

func (n *node) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func (n *node) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id and target_path are required")
	}
	capability := req.GetVolumeCapability()
	if capability.GetMount() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume_capability must be a filesystem (mount) volume")
	}
	opts, err := parseMountOptions(capability.GetMount().GetMountFlags())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	source, err := sourceDir(n.dataRoot, req.GetVolumeContext()["bucketName"], opts.prefix)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	mode := capability.GetAccessMode().GetMode()
	readOnly := opts.readOnly || req.GetReadonly() ||
		mode == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY ||
		mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY

	n.mu.Lock()
	defer n.mu.Unlock()
	if err := prepareSource(source, opts, readOnly); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	mounted, err := isMountPoint(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if mounted { // a repeated call: the volume is already there
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := bindMount(source, target, readOnly); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	log.Printf("published %s: %s -> %s (read-only %t)", req.GetVolumeId(), source, target, readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

func (n *node) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id and target_path are required")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	mounted, err := isMountPoint(target)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if mounted {
		if err := syscall.Unmount(target, 0); err != nil {
			return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
		}
	}
	// The CSI spec leaves removing the target path to the plugin.
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	log.Printf("unpublished %s from %s", req.GetVolumeId(), target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// mountOptions is what this stand-in uses of Mountpoint's options.
type mountOptions struct {
	prefix   string
	uid, gid int // -1: not given
	readOnly bool
}

// parseMountOptions reads "key value", "key=value" or "key" options (a leading "--" allowed,
// as Mountpoint's CSI driver allows it).
func parseMountOptions(flags []string) (mountOptions, error) {
	opts := mountOptions{uid: -1, gid: -1}
	for _, flag := range flags {
		key, value := strings.TrimPrefix(strings.TrimSpace(flag), "--"), ""
		if i := strings.IndexAny(key, " ="); i >= 0 { // the first space or '=' ends the key
			key, value = key[:i], strings.TrimSpace(key[i+1:])
		}
		switch key {
		case "read-only":
			opts.readOnly = true
		case "prefix":
			opts.prefix = value
		case "uid", "gid":
			id, err := strconv.Atoi(value)
			if err != nil || id < 0 || id > 1<<31-1 {
				return opts, fmt.Errorf("mount option %q: %s must be a non-negative integer", flag, key)
			}
			if key == "uid" {
				opts.uid = id
			} else {
				opts.gid = id
			}
		}
	}
	return opts, nil
}

// sourceDir is <dataRoot>/<bucket>/<prefix>; bucket and prefix cannot leave dataRoot.
func sourceDir(dataRoot, bucket, prefix string) (string, error) {
	if !bucketPattern.MatchString(bucket) || strings.Contains(bucket, "..") {
		return "", fmt.Errorf("volume attribute bucketName %q is not an S3 bucket name "+
			"(3-63 of a-z, 0-9, '.', '-'; starting and ending with a letter or digit)", bucket)
	}
	parts := []string{dataRoot, bucket}
	for _, part := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
		if part == "." || part == ".." {
			return "", fmt.Errorf("mount option prefix %q: no '.' or '..' segments", prefix)
		}
		if part != "" {
			parts = append(parts, part)
		}
	}
	return filepath.Join(parts...), nil
}

// prepareSource creates the bucket directory (owned by uid/gid when given) and, for a
// writable volume, gives an existing one to uid/gid.
func prepareSource(dir string, opts mountOptions, readOnly bool) error {
	_, err := os.Stat(dir)
	created := errors.Is(err, os.ErrNotExist)
	if created {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if (created || !readOnly) && (opts.uid >= 0 || opts.gid >= 0) {
		return os.Chown(dir, opts.uid, opts.gid) // -1 leaves that id as it is
	}
	return nil
}

func bindMount(source, target string, readOnly bool) error {
	if err := syscall.Mount(source, target, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", source, target, err)
	}
	if !readOnly {
		return nil
	}
	// A bind mount takes MS_RDONLY only on a remount.
	flags := uintptr(syscall.MS_REMOUNT | syscall.MS_BIND | syscall.MS_RDONLY)
	if err := syscall.Mount("", target, "", flags, ""); err != nil {
		_ = syscall.Unmount(target, 0)
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// isMountPoint reports whether path is a mount point in this mount namespace.
func isMountPoint(path string) (bool, error) {
	path = filepath.Clean(path)
	file, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) > 4 && unescapeMountPath(fields[4]) == path {
			return true, nil
		}
	}
	return false, scanner.Err()
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space and so on).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
