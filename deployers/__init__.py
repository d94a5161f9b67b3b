"""Deployers: what runs model versions, behind one ``observe``/``apply`` interface.

So far: ``model_server``, the Open Inference Protocol (KServe v2) REST server that
``modelreg serve-model`` runs for one version. The local and Kubernetes deployers, which
start and adopt those servers, come with the rollouts and Kubernetes issues.
"""
