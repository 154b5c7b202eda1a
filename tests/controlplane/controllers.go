// The two kube-controller-manager controllers that make kube-apiserver behave like a cluster
// for a controller host: the garbage collector (ownerReferences, propagationPolicy
// Background/Foreground/Orphan) and the namespace controller (deleting a namespace deletes
// its contents, then the namespace). envtest runs neither; Capstan's tests need both because
// Cluster API relies on garbage collection when a Cluster is deleted. They are wired the way
// kube-controller-manager wires them (cmd/kube-controller-manager/app: CreateControllerContext,
// startGarbageCollectorController, startNamespaceController), in this process, as the admin.
package main

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	cacheddiscovery "k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/informers"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/controller-manager/pkg/informerfactory"
	"k8s.io/kubernetes/pkg/controller/garbagecollector"
	namespacecontroller "k8s.io/kubernetes/pkg/controller/namespace"
)

// discoveryPeriod is how often the garbage collector re-reads discovery (kube-controller-manager:
// 30s). Tests install CRDs and create their objects at once, so it looks far more often.
const discoveryPeriod = 2 * time.Second

// runControllers waits until the API server behind kubeconfig is ready, then starts the
// garbage collector and the namespace controller; they stop when ctx ends.
func runControllers(ctx context.Context, kubeconfig string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("controllers kubeconfig: %w", err)
	}
	// kube-controller-manager raises the limits of both controllers for the same reason: each
	// deletion costs several requests.
	cfg.QPS, cfg.Burst = 500, 1000
	client, err := clientset.NewForConfig(cfg)
	if err != nil {
		return err
	}
	metadataClient, err := metadata.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		return client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error() == nil, nil
	}); err != nil {
		return fmt.Errorf("waiting for the API server: %w", err)
	}

	sharedInformers := informers.NewSharedInformerFactory(client, 0)
	metadataInformers := metadatainformer.NewSharedInformerFactory(metadataClient, 0)
	restMapper := restmapper.NewDeferredDiscoveryRESTMapper(cacheddiscovery.NewMemCacheClient(client.Discovery()))
	started := make(chan struct{})

	gc, err := garbagecollector.NewGarbageCollector(
		ctx,
		client,
		metadataClient,
		restMapper,
		garbagecollector.DefaultIgnoredResources(),
		informerfactory.NewInformerFactory(sharedInformers, metadataInformers),
		started,
	)
	if err != nil {
		return fmt.Errorf("garbage collector: %w", err)
	}
	go gc.Run(ctx, 5, 30*time.Second)
	// Sync re-reads discovery and resets the REST mapper when resources (CRDs) change.
	go gc.Sync(ctx, client.Discovery(), discoveryPeriod)

	ns := namespacecontroller.NewNamespaceController(
		ctx,
		client,
		metadataClient,
		client.Discovery().ServerPreferredNamespacedResources,
		sharedInformers.Core().V1().Namespaces(),
		5*time.Minute,
		v1.FinalizerKubernetes,
	)
	go ns.Run(ctx, 5)

	sharedInformers.Start(ctx.Done())
	metadataInformers.Start(ctx.Done())
	close(started)
	return nil
}
