from setuptools import find_packages, setup

setup(
    name="salt-ami",
    version="0.1.0",
    description="Bake golden OpenStack images with SaltStack",
    packages=find_packages(include=["saltami", "saltami.*"]),
    python_requires=">=3.10",
    install_requires=[
        "python-novaclient",
        "python-glanceclient",
        "python-cinderclient",
        "keystoneauth1",
        "openstacksdk",
        "pyyaml",
    ],
)
