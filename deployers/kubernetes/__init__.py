"""The Kubernetes deployer: the only package that imports ``kubernetes`` (lazily, in ``api``).

``KubernetesDeployer`` (``deployer``) applies and observes model-server Deployments and
Services through ``KubeApi`` (``api``); ``manifests`` builds the objects and ``naming`` their
names and label values.
"""

from deployers.kubernetes.deployer import KubernetesDeployer

__all__ = ["KubernetesDeployer"]
