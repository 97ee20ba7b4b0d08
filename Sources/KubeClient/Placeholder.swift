import KubeModels
