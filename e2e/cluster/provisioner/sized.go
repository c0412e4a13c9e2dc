// Fixed-capacity volumes: a StorageClass with parameter fixedCapacity: "true" gets, for each
// claim, an ext4 filesystem of exactly the requested size in a sparse image file, loop-mounted
// on the volume's directory. A pod on the real node that writes past it gets ENOSPC, as on a
// real cluster's block storage (a plain hostPath directory would have the host disk's space).
//
// Expansion (the class sets allowVolumeExpansion: true): when a bound claim asks for more than
// its volume holds, the image grows offline, as CSI drivers without online expansion do
// (ExpandOffline in the CSI spec): unmount, grow the file, e2fsck, resize2fs, mount. While a
// pod holds the mount the unmount fails and the claim is retried with backoff; the claim shows
// the FileSystemResizePending condition meanwhile. Online ext4 resize is not used: the
// kernel refuses it in some sandboxes (EXT4_IOC_RESIZE_FS gives EPERM in Firecracker VMs).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The StorageClass parameter that asks for fixed-capacity volumes.
const fixedCapacityParameter = "fixedCapacity"

func fixedCapacity(class *storagev1.StorageClass) bool {
	return class != nil && class.Parameters[fixedCapacityParameter] == "true"
}

func (p *provisioner) imagePath(pvName string) string {
	return filepath.Join(p.hostRoot, ".images", pvName+".img")
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func mounted(dir string) bool {
	return exec.Command("mountpoint", "-q", dir).Run() == nil
}

// makeSized creates the image of `size` bytes with an ext4 filesystem (no blocks reserved for
// root: the pods are not root) and mounts it on dir, world-writable like the plain volumes.
// Idempotent: a mounted dir is left alone, an existing image is reused.
func (p *provisioner) makeSized(pvName, dir string, size resource.Quantity) error {
	if mounted(dir) {
		return nil
	}
	img := p.imagePath(pvName)
	if _, err := os.Stat(img); os.IsNotExist(err) {
		if err := os.MkdirAll(filepath.Dir(img), 0o700); err != nil {
			return err
		}
		tmp := img + ".tmp"
		if err := os.WriteFile(tmp, nil, 0o600); err != nil {
			return err
		}
		if err := os.Truncate(tmp, size.Value()); err != nil {
			return err
		}
		if err := run("mkfs.ext4", "-q", "-F", "-m", "0", tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, img); err != nil {
			return err
		}
	}
	if err := run("mount", "-o", "loop", img, dir); err != nil {
		return err
	}
	return os.Chmod(dir, 0o777)
}

// expandSized grows a bound claim's fixed-capacity volume to its request, offline. Returns
// nil when there is nothing to do or the growth is done (PV capacity and claim status updated).
func (p *provisioner) expandSized(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	pv, err := p.volumes.Get(claim.Spec.VolumeName)
	if err != nil {
		return err
	}
	want := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	have := pv.Spec.Capacity[corev1.ResourceStorage]
	if pv.Annotations[provisionedByAnnotation] != p.name || pv.Spec.HostPath == nil {
		return nil
	}
	if want.Cmp(have) <= 0 {
		return p.claimCapacity(ctx, claim, have)
	}
	dir, img := pv.Spec.HostPath.Path, p.imagePath(pv.Name)
	if mounted(dir) {
		if err := run("umount", dir); err != nil {
			_ = p.setResizePending(ctx, claim)
			return fmt.Errorf("offline expansion waits for the pods using %s to stop: %v", claim.Name, err)
		}
	}
	if err := os.Truncate(img, want.Value()); err != nil {
		return err
	}
	// e2fsck exits 1 when it fixed something; resize2fs wants a checked filesystem.
	if err := exec.Command("e2fsck", "-f", "-y", img).Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			return fmt.Errorf("e2fsck %s: %v", img, err)
		}
	}
	if err := run("resize2fs", img); err != nil {
		return err
	}
	if err := p.makeSized(pv.Name, dir, want); err != nil {
		return err
	}
	pv = pv.DeepCopy()
	pv.Spec.Capacity[corev1.ResourceStorage] = want
	if _, err := p.client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
		return err
	}
	log.Printf("expanded %s (%s -> %s) for %s/%s", pv.Name, have.String(), want.String(), claim.Namespace, claim.Name)
	return p.claimCapacity(ctx, claim, want)
}

// claimCapacity records the volume's size in the claim's status (what the external resizer
// and the kubelet do after an expansion) and drops the resize conditions.
func (p *provisioner) claimCapacity(ctx context.Context, claim *corev1.PersistentVolumeClaim, size resource.Quantity) error {
	cur, ok := claim.Status.Capacity[corev1.ResourceStorage]
	if claim.Status.Phase != corev1.ClaimBound || (ok && cur.Cmp(size) == 0 && len(claim.Status.Conditions) == 0) {
		return nil
	}
	c := claim.DeepCopy()
	if c.Status.Capacity == nil {
		c.Status.Capacity = corev1.ResourceList{}
	}
	c.Status.Capacity[corev1.ResourceStorage] = size
	c.Status.Conditions = nil
	c.Status.AllocatedResources = nil
	c.Status.AllocatedResourceStatuses = nil
	_, err := p.client.CoreV1().PersistentVolumeClaims(c.Namespace).UpdateStatus(ctx, c, metav1.UpdateOptions{})
	return err
}

func (p *provisioner) setResizePending(ctx context.Context, claim *corev1.PersistentVolumeClaim) error {
	for _, cond := range claim.Status.Conditions {
		if cond.Type == corev1.PersistentVolumeClaimFileSystemResizePending {
			return nil
		}
	}
	c := claim.DeepCopy()
	c.Status.Conditions = append(c.Status.Conditions, corev1.PersistentVolumeClaimCondition{
		Type:               corev1.PersistentVolumeClaimFileSystemResizePending,
		Status:             corev1.ConditionTrue,
		LastTransitionTime: metav1.Now(),
		Message:            "Waiting for the pods using this volume to stop: it grows offline.",
	})
	_, err := p.client.CoreV1().PersistentVolumeClaims(c.Namespace).UpdateStatus(ctx, c, metav1.UpdateOptions{})
	return err
}

// removeSized unmounts a released fixed-capacity volume and deletes its image.
func (p *provisioner) removeSized(pv *corev1.PersistentVolume) error {
	if pv.Spec.HostPath != nil && mounted(pv.Spec.HostPath.Path) {
		if err := run("umount", pv.Spec.HostPath.Path); err != nil {
			return err
		}
	}
	if err := os.Remove(p.imagePath(pv.Name)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
