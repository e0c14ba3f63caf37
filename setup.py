from setuptools import find_packages, setup

setup(
    name="salt-ami",
    version="0.1.0",
    description="Bake golden OpenStack images with SaltStack",
    packages=find_packages(include=["saltami", "saltami.*"]),
    # saltami/_modules, _states, _runners, _pillar, _output link to the top-level loader module folders;
    # building the package copies the files they point to (see saltami/saltext.py)
    package_data={"saltami": ["_modules/*.py", "_states/*.py", "_runners/*.py", "_pillar/*.py",
                               "_output/*.py"]},
    python_requires=">=3.10",
    install_requires=[
        "python-novaclient",
        "python-glanceclient",
        "python-cinderclient",
        "keystoneauth1",
        "openstacksdk",
        # the format inspector nova and Glance check images with (saltami/imageformat.py)
        "oslo.utils",
        "pyyaml",
    ],
    entry_points={"salt.loader": ["salt-ami = saltami.saltext:loader_dirs"]},
)
