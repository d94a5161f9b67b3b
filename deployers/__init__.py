"""Deployers: what runs model versions, behind one ``observe``/``apply`` interface
(``deployers/base.py``).

- ``local``: one ``modelreg serve-model`` process per replica on this machine.
- ``kubernetes``: Deployments and Services through server-side apply, and the cluster's
  router (Gateway API HTTPRoute or Istio VirtualService).
- ``model_server``: the Open Inference Protocol (KServe v2) REST server both targets run.
"""
