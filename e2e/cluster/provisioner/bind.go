// Binding: the provisioner binds each claim to the volume it made itself (volume phase Bound,
// the claim's volumeName and bind annotations, the claim's phase Bound), as the PV controller
// would. kube-controller-manager's PV controller syncs claims and volumes in one worker each;
// with thousands of claims created at once (bench/controlplane at N=3000) it was the bottleneck:
// volumes provisioned within a minute stayed Pending for many more, and every pod using them
// with them. Done here, binding runs in the provisioner's worker pool. The PV controller then
// finds each pair bound and consistent, and only checks it.

package main

import (
	"context"
	"log"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	bindCompletedAnnotation = "pv.kubernetes.io/bind-completed"
	boundByControllerAnn    = "pv.kubernetes.io/bound-by-controller"
)

// bind makes `pv` (pre-bound to `claim` by its claimRef) and `claim` Bound. Idempotent: each
// step is skipped when already done; a conflict (someone else, e.g. the PV controller, wrote
// first) returns the error and the queue retries with the newer objects.
func (p *provisioner) bind(ctx context.Context, claim *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) error {
	if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.UID != claim.UID {
		return nil // not ours to bind (the claim was re-created; the volume is released)
	}
	if pv.Status.Phase != corev1.VolumeBound {
		v := pv.DeepCopy()
		v.Status.Phase = corev1.VolumeBound
		if _, err := p.client.CoreV1().PersistentVolumes().UpdateStatus(ctx, v, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	c := claim
	if claim.Spec.VolumeName != pv.Name || claim.Annotations[bindCompletedAnnotation] != "yes" {
		c = claim.DeepCopy()
		c.Spec.VolumeName = pv.Name
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[bindCompletedAnnotation] = "yes"
		c.Annotations[boundByControllerAnn] = "yes"
		updated, err := p.client.CoreV1().PersistentVolumeClaims(c.Namespace).Update(ctx, c, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		c = updated
	}
	if c.Status.Phase != corev1.ClaimBound {
		c = c.DeepCopy()
		c.Status.Phase = corev1.ClaimBound
		c.Status.AccessModes = pv.Spec.AccessModes
		c.Status.Capacity = pv.Spec.Capacity
		if _, err := p.client.CoreV1().PersistentVolumeClaims(c.Namespace).UpdateStatus(ctx, c, metav1.UpdateOptions{}); err != nil {
			return err
		}
		log.Printf("bound %s/%s to %s", c.Namespace, c.Name, pv.Name)
	}
	return nil
}
