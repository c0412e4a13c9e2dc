// Command fake-provisioner is a dynamic volume provisioner for the local e2e control plane,
// where no real storage exists (KWOK nodes mount nothing).
//
// For every unbound PersistentVolumeClaim whose StorageClass names this provisioner it
// creates a hostPath PersistentVolume of the requested size, pre-bound to the claim through
// claimRef, and binds the pair itself (bind.go: in its worker pool, not in the PV controller's
// single worker, the bottleneck with thousands of claims). When a claim goes away the PV
// controller marks its volume Released; volumes this provisioner made with reclaim policy
// Delete are then deleted. With -create-dirs (a real node on this host mounts the volumes) the
// directory is made world-writable before the PV exists, as rancher's local-path-provisioner
// does, so non-root pods can write to it (hostPath volumes ignore fsGroup), and it is removed
// with its volume. A StorageClass with parameter fixedCapacity: "true" gets volumes of exactly
// the requested size, which grow offline when their claim asks for more (sized.go). Informers
// and a small worker pool keep it quick for ~1000 claims.
//
// It is built by e2e/cluster/build inside the Kubernetes wrapper module (same client-go).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

const provisionedByAnnotation = "pv.kubernetes.io/provisioned-by"

type provisioner struct {
	name       string
	hostRoot   string
	createDirs bool
	client     kubernetes.Interface
	claims     corelisters.PersistentVolumeClaimLister
	volumes    corelisters.PersistentVolumeLister
	classes    storagelisters.StorageClassLister
	queue      workqueue.TypedRateLimitingInterface[string]
}

// Queue keys: "claim/<namespace>/<name>" or "volume/<name>".
func (p *provisioner) enqueue(kind string) func(obj interface{}) {
	return func(obj interface{}) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		key, err := cache.MetaNamespaceKeyFunc(obj)
		if err == nil {
			p.queue.Add(kind + "/" + key)
		}
	}
}

func (p *provisioner) handlers(kind string) cache.ResourceEventHandlerFuncs {
	add := p.enqueue(kind)
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(_, obj interface{}) { add(obj) },
	}
}

func (p *provisioner) worker(ctx context.Context) {
	for {
		key, shutdown := p.queue.Get()
		if shutdown {
			return
		}
		err := p.sync(ctx, key)
		if err != nil {
			log.Printf("%s: %v (will retry)", key, err)
			p.queue.AddRateLimited(key)
		} else {
			p.queue.Forget(key)
		}
		p.queue.Done(key)
	}
}

func (p *provisioner) sync(ctx context.Context, key string) error {
	kind, rest, _ := strings.Cut(key, "/")
	if kind == "volume" {
		return p.syncVolume(ctx, rest)
	}
	namespace, name, _ := strings.Cut(rest, "/")
	return p.syncClaim(ctx, namespace, name)
}

func (p *provisioner) syncClaim(ctx context.Context, namespace, name string) error {
	claim, err := p.claims.PersistentVolumeClaims(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil // its volume, if any, becomes Released and is handled as a volume
	}
	if err != nil {
		return err
	}
	if claim.DeletionTimestamp != nil || claim.Spec.StorageClassName == nil {
		return nil
	}
	class, err := p.classes.Get(*claim.Spec.StorageClassName)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if class.Provisioner != p.name {
		return nil
	}
	if claim.Spec.VolumeName != "" {
		if p.createDirs && fixedCapacity(class) {
			return p.expandSized(ctx, claim) // sized.go
		}
		return nil
	}
	pvName := "pvc-" + string(claim.UID)
	if made, err := p.volumes.Get(pvName); err == nil {
		return p.bind(ctx, claim, made) // made already: bind it (bind.go), if not done yet
	}
	size, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		return fmt.Errorf("claim has no storage request")
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	hostPathType := corev1.HostPathDirectoryOrCreate
	if p.createDirs {
		dir := filepath.Join(p.hostRoot, pvName)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o777); err != nil { // MkdirAll's mode is masked by umask
			return err
		}
		if fixedCapacity(class) {
			if err := p.makeSized(pvName, dir, size); err != nil { // sized.go
				return err
			}
		}
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        pvName,
			Annotations: map[string]string{provisionedByAnnotation: p.name},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   claim.Spec.AccessModes,
			VolumeMode:                    claim.Spec.VolumeMode,
			StorageClassName:              class.Name,
			PersistentVolumeReclaimPolicy: reclaim,
			MountOptions:                  class.MountOptions,
			ClaimRef: &corev1.ObjectReference{
				Kind:            "PersistentVolumeClaim",
				APIVersion:      "v1",
				Namespace:       claim.Namespace,
				Name:            claim.Name,
				UID:             claim.UID,
				ResourceVersion: claim.ResourceVersion,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{
					Path: filepath.Join(p.hostRoot, pvName),
					Type: &hostPathType,
				},
			},
		},
	}
	made, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil // the informer brings it; the claim's next sync binds it
	}
	if err != nil {
		return err
	}
	log.Printf("provisioned %s (%s) for %s/%s", pvName, size.String(), claim.Namespace, claim.Name)
	return p.bind(ctx, claim, made) // bind.go: not left to the PV controller's single worker
}

func (p *provisioner) syncVolume(ctx context.Context, name string) error {
	pv, err := p.volumes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pv.Annotations[provisionedByAnnotation] != p.name || pv.DeletionTimestamp != nil ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		pv.Status.Phase != corev1.VolumeReleased {
		return nil
	}
	if p.createDirs && pv.Spec.HostPath != nil && strings.HasPrefix(pv.Spec.HostPath.Path, p.hostRoot+"/") {
		if err := p.removeSized(pv); err != nil { // sized.go
			return err
		}
		if err := os.RemoveAll(pv.Spec.HostPath.Path); err != nil {
			return err
		}
	}
	err = p.client.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		log.Printf("deleted released volume %s", name)
	}
	return err
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "path to a kubeconfig")
	name := flag.String("provisioner", "slm.ai/fake-provisioner", "provisioner name StorageClasses refer to")
	hostRoot := flag.String("host-root", "/tmp/slm-fake-volumes", "directory the hostPath volumes point into")
	createDirs := flag.Bool("create-dirs", false, "create each volume's directory (mode 0777) and remove it with the volume")
	workers := flag.Int("workers", 8, "parallel workers")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 200, 400 // thousands of claims in benchmarks
	cfg.UserAgent = "fake-provisioner"
	client := kubernetes.NewForConfigOrDie(cfg)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	p := &provisioner{
		name:       *name,
		hostRoot:   *hostRoot,
		createDirs: *createDirs,
		client:     client,
		claims:     factory.Core().V1().PersistentVolumeClaims().Lister(),
		volumes:    factory.Core().V1().PersistentVolumes().Lister(),
		classes:    factory.Storage().V1().StorageClasses().Lister(),
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.DefaultTypedControllerRateLimiter[string]()),
	}
	if _, err := factory.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(p.handlers("claim")); err != nil {
		log.Fatal(err)
	}
	if _, err := factory.Core().V1().PersistentVolumes().Informer().AddEventHandler(p.handlers("volume")); err != nil {
		log.Fatal(err)
	}
	factory.Storage().V1().StorageClasses().Informer()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	log.Printf("fake-provisioner %q running with %d workers", p.name, *workers)

	for i := 0; i < *workers; i++ {
		go wait.UntilWithContext(ctx, p.worker, time.Second)
	}
	<-ctx.Done()
	p.queue.ShutDown()
	factory.Shutdown()
}
